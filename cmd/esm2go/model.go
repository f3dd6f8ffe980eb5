package main

import (
	"context"
	"io"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/weights"
)

const defaultModel = "facebook/esm2_t33_650M_UR50D"

// openModel resolves a --model argument (HF id, directory or .pt; download
// progress to progress) and opens the checkpoint (esm.OpenCheckpoint); the
// devices then load it (esm.NewModel).
func openModel(ctx context.Context, model string, progress io.Writer) (*weights.Checkpoint, esm.Config, error) {
	path, err := weights.Resolve(ctx, model, weights.ResolveOptions{Progress: progress})
	if err != nil {
		return nil, esm.Config{}, err
	}
	return esm.OpenCheckpoint(path)
}
