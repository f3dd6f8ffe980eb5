package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Config holds the fields of a Hugging Face ESM config.json that ESM2 inference
// needs. JSON tags are the HF names.
type Config struct {
	ModelType             string   `json:"model_type"` // "esm"
	Architectures         []string `json:"architectures"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	HiddenSize            int      `json:"hidden_size"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	IntermediateSize      int      `json:"intermediate_size"`
	VocabSize             int      `json:"vocab_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	LayerNormEps          float64  `json:"layer_norm_eps"`
	TokenDropout          bool     `json:"token_dropout"`
	PositionEmbeddingType string   `json:"position_embedding_type"` // must be "rotary" for ESM2
	EmbLayerNormBefore    bool     `json:"emb_layer_norm_before"`
	MaskTokenID           int      `json:"mask_token_id"`
	PadTokenID            int      `json:"pad_token_id"`
	IsFoldingModel        bool     `json:"is_folding_model"`
	TorchDtype            string   `json:"torch_dtype"` // transformers 5 writes "dtype"; both are read
}

// HeadDim returns HiddenSize / NumAttentionHeads.
func (c Config) HeadDim() int {
	if c.NumAttentionHeads == 0 {
		return 0
	}
	return c.HiddenSize / c.NumAttentionHeads
}

// ESM2 facts every checkpoint shares: the alphabet's size and its special
// token ids (see esm's alphabet).
const (
	esmVocabSize = 33
	esmMaskToken = 32
	esmPadToken  = 1
)

// Limits of what a config.json may claim before any tensor is looked at.
// They are far above every released ESM2 model and far below what would
// exhaust memory if something sized a buffer from them; Open then checks
// every size against the tensors the checkpoint really holds.
const (
	// maxLayers: ESM2 15B has 48 layers; every layer is 16 tensors in the
	// checkpoint, so 1024 layers would already be 16k tensors.
	maxLayers = 1024
	// maxHiddenSize: ESM2 15B has 5120. At 32768 one (D, 4D) FFN matrix
	// holds 4.3 G values.
	maxHiddenSize = 32768
	// maxIntermediateSize: ESM2 uses 4 × hidden size.
	maxIntermediateSize = 4 * maxHiddenSize
	// maxPositions: ESM2 has 1026 (1024 tokens + 2). The rotary model has no
	// position table, so nothing here is sized by it; it is bounded only so
	// that nothing can be.
	maxPositions = 1 << 20
	// maxConfigBytes: HF ESM config.json files are under 2 KB.
	maxConfigBytes = 1 << 20
)

// Validate reports why c is not an ESM2 encoder this project can run, or nil.
// It is the one place that decides "is this an ESM2 config" (esm.ConfigFromHF
// calls it). Sizes are checked against the limits above; Open checks them
// against the checkpoint's tensors too.
func (c Config) Validate() error {
	var errs []error
	if c.ModelType != "esm" {
		errs = append(errs, fmt.Errorf("model_type %s, want \"esm\"", quoteName(c.ModelType)))
	}
	if c.IsFoldingModel {
		errs = append(errs, errors.New("is_folding_model is true (ESMFold is not supported, only the ESM2 encoder)"))
	}
	if c.PositionEmbeddingType != "rotary" {
		errs = append(errs, fmt.Errorf("position_embedding_type %s, want \"rotary\" (ESM2; ESM-1b/absolute is not supported)", quoteName(c.PositionEmbeddingType)))
	}
	if c.EmbLayerNormBefore {
		errs = append(errs, errors.New("emb_layer_norm_before is true (ESM-1b style; ESM2 has it false)"))
	}
	if c.NumHiddenLayers <= 0 || c.NumHiddenLayers > maxLayers {
		errs = append(errs, fmt.Errorf("num_hidden_layers %d, want 1..%d (ESM2 15B has 48)", c.NumHiddenLayers, maxLayers))
	}
	switch {
	case c.HiddenSize <= 0 || c.HiddenSize > maxHiddenSize:
		errs = append(errs, fmt.Errorf("hidden_size %d, want 1..%d (ESM2 15B has 5120)", c.HiddenSize, maxHiddenSize))
	case c.NumAttentionHeads <= 0 || c.HiddenSize%c.NumAttentionHeads != 0:
		errs = append(errs, fmt.Errorf("hidden_size %d is not a positive multiple of num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads))
	case c.HeadDim()%2 != 0:
		errs = append(errs, fmt.Errorf("head dim %d is odd (rotary needs an even head dim)", c.HeadDim()))
	}
	if c.IntermediateSize <= 0 || c.IntermediateSize > maxIntermediateSize {
		errs = append(errs, fmt.Errorf("intermediate_size %d, want 1..%d", c.IntermediateSize, maxIntermediateSize))
	}
	if c.VocabSize != esmVocabSize {
		errs = append(errs, fmt.Errorf("vocab_size %d, want %d (the ESM alphabet)", c.VocabSize, esmVocabSize))
	}
	if c.MaxPositionEmbeddings < 0 || c.MaxPositionEmbeddings > maxPositions {
		errs = append(errs, fmt.Errorf("max_position_embeddings %d, want 0..%d (ESM2 has 1026)", c.MaxPositionEmbeddings, maxPositions))
	}
	if !(c.LayerNormEps > 0 && c.LayerNormEps <= 1) {
		errs = append(errs, fmt.Errorf("layer_norm_eps %g, want a value in (0, 1] (ESM2 has 1e-5)", c.LayerNormEps))
	}
	// 0 is what an absent field decodes to; <cls> (id 0) is never either.
	if c.MaskTokenID != 0 && c.MaskTokenID != esmMaskToken {
		errs = append(errs, fmt.Errorf("mask_token_id %d, want %d (the ESM alphabet's <mask>)", c.MaskTokenID, esmMaskToken))
	}
	if c.PadTokenID != 0 && c.PadTokenID != esmPadToken {
		errs = append(errs, fmt.Errorf("pad_token_id %d, want %d (the ESM alphabet's <pad>)", c.PadTokenID, esmPadToken))
	}
	if len(errs) > 0 {
		return fmt.Errorf("unsupported config: %w", errors.Join(errs...))
	}
	return nil
}

// ParseConfig decodes a config.json body (without validating it; see
// Validate). Bodies over 1 MiB are refused.
func ParseConfig(data []byte) (Config, error) {
	if len(data) > maxConfigBytes {
		return Config{}, fmt.Errorf("config of %d bytes exceeds the %d byte limit (ESM config.json files are under 2 KB)", len(data), maxConfigBytes)
	}
	var aux struct {
		Config
		Dtype string `json:"dtype"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return Config{}, err
	}
	c := aux.Config
	if c.TorchDtype == "" {
		c.TorchDtype = aux.Dtype
	}
	return c, nil
}

// LoadConfig reads, parses and validates a config.json; errors name the file.
func LoadConfig(path string) (Config, error) {
	data, err := readLimited(path, maxConfigBytes)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// readLimited reads a whole small file, refusing one over limit bytes
// before reading it.
func readLimited(path string, limit int64) ([]byte, error) {
	if err := regularBeforeOpen(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d byte limit for this file", path, st.Size(), limit)
	}
	// The limit also holds if the file grows while it is read.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than the %d byte limit for this file", path, limit)
	}
	return data, nil
}
