package weights

import (
	"encoding/json"
	"errors"
	"fmt"
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

// Validate reports why c is not an ESM2 encoder this project can run, or nil.
func (c Config) Validate() error {
	var errs []error
	if c.ModelType != "esm" {
		errs = append(errs, fmt.Errorf("model_type %q, want \"esm\"", c.ModelType))
	}
	if c.IsFoldingModel {
		errs = append(errs, errors.New("is_folding_model is true (ESMFold is not supported, only the ESM2 encoder)"))
	}
	if c.PositionEmbeddingType != "rotary" {
		errs = append(errs, fmt.Errorf("position_embedding_type %q, want \"rotary\" (ESM2; ESM-1b/absolute is not supported)", c.PositionEmbeddingType))
	}
	if c.EmbLayerNormBefore {
		errs = append(errs, errors.New("emb_layer_norm_before is true (ESM-1b style; ESM2 has it false)"))
	}
	if c.NumHiddenLayers <= 0 {
		errs = append(errs, fmt.Errorf("num_hidden_layers %d, want > 0", c.NumHiddenLayers))
	}
	if c.HiddenSize <= 0 || c.NumAttentionHeads <= 0 || c.HiddenSize%c.NumAttentionHeads != 0 {
		errs = append(errs, fmt.Errorf("hidden_size %d is not a positive multiple of num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads))
	} else if c.HeadDim()%2 != 0 {
		errs = append(errs, fmt.Errorf("head dim %d is odd (rotary needs an even head dim)", c.HeadDim()))
	}
	if c.IntermediateSize <= 0 {
		errs = append(errs, fmt.Errorf("intermediate_size %d, want > 0", c.IntermediateSize))
	}
	if c.VocabSize <= 0 {
		errs = append(errs, fmt.Errorf("vocab_size %d, want > 0", c.VocabSize))
	}
	if !(c.LayerNormEps > 0) {
		errs = append(errs, fmt.Errorf("layer_norm_eps %g, want > 0", c.LayerNormEps))
	}
	if c.MaskTokenID < 0 || c.MaskTokenID >= max(c.VocabSize, 1) || c.PadTokenID < 0 || c.PadTokenID >= max(c.VocabSize, 1) {
		errs = append(errs, fmt.Errorf("mask_token_id %d / pad_token_id %d outside vocab_size %d", c.MaskTokenID, c.PadTokenID, c.VocabSize))
	}
	if len(errs) > 0 {
		return fmt.Errorf("unsupported config: %w", errors.Join(errs...))
	}
	return nil
}

// ParseConfig decodes a config.json body (without validating it).
func ParseConfig(data []byte) (Config, error) {
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
	data, err := os.ReadFile(path)
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
