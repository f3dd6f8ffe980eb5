// Package esm is ESM2 inference: the model's Config, the 33-token alphabet
// and its byte-table Tokenizer, packed varlen Batches, the Params bound to a
// Backend, and the forward pass (Model.Forward) as a flat list of Backend
// calls that reads like the paper. Backends live in esm/cpu and esm/cuda.
package esm
