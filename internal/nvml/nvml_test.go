package nvml

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorAndCode(t *testing.T) {
	e := &Error{Call: "nvmlDeviceGetSamples", Code: ErrorNotFound, Msg: "Not Found"}
	if got, want := e.Error(), "nvmlDeviceGetSamples: Not Found"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("device 0: %w", e)
	for _, c := range []struct {
		err  error
		want Return
	}{
		{nil, Success},
		{e, ErrorNotFound},
		{wrapped, ErrorNotFound},
		{errors.New("other"), ErrorUnknown},
	} {
		if got := Code(c.err); got != c.want {
			t.Errorf("Code(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
