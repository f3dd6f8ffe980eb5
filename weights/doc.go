// Package weights loads ESM2 checkpoints (Hugging Face safetensors + config.json, or
// fair-esm .pt files) into named, shape-checked tensors backed by read-only mmaps,
// and finds or downloads them in the Hugging Face and torch hub caches.
package weights
