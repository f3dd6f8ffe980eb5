// Package score scores protein variants with an ESM2 masked language
// model, with the strategies of fair-esm's variant-prediction example:
// masked marginals, wild-type marginals and the pseudo-log-likelihood.
// Masked copies of a sequence are packed into varlen batches under the
// model's token budget; docs/SCORE.md is the user's guide.
package score
