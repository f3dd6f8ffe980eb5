package weights

import "fmt"

func openFairESM(path string) (*Checkpoint, error) {
	return nil, fmt.Errorf("%s: fair-esm .pt checkpoints are not supported yet", path)
}
