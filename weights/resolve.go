package weights

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ResolveOptions says where to look for models and how to download them. Zero
// values follow the environment the way huggingface_hub and torch.hub do.
type ResolveOptions struct {
	CacheDir    string    // "" = $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
	TorchHubDir string    // "" = $TORCH_HOME/hub, else ~/.cache/torch/hub (fair-esm .pt in <dir>/checkpoints/<name>.pt)
	Revision    string    // "" = "main"
	Endpoint    string    // "" = $HF_ENDPOINT, else https://huggingface.co
	Offline     bool      // also true when HF_HUB_OFFLINE is set to a true value: never download
	Progress    io.Writer // nil = silent; a progress bar on a terminal, else occasional plain lines
	HTTPClient  *http.Client
	Hub         HubOptions // timeouts and retries of downloads; zero fields take the defaults documented there
}

// withDefaults fills the empty fields from the environment.
func (o ResolveOptions) withDefaults() ResolveOptions {
	home, _ := os.UserHomeDir()
	if o.CacheDir == "" {
		switch {
		case os.Getenv("HF_HUB_CACHE") != "":
			o.CacheDir = os.Getenv("HF_HUB_CACHE")
		case os.Getenv("HF_HOME") != "":
			o.CacheDir = filepath.Join(os.Getenv("HF_HOME"), "hub")
		default:
			o.CacheDir = filepath.Join(home, ".cache", "huggingface", "hub")
		}
	}
	if o.TorchHubDir == "" {
		if th := os.Getenv("TORCH_HOME"); th != "" {
			o.TorchHubDir = filepath.Join(th, "hub")
		} else {
			o.TorchHubDir = filepath.Join(home, ".cache", "torch", "hub")
		}
	}
	if o.Revision == "" {
		o.Revision = "main"
	}
	if o.Endpoint == "" {
		o.Endpoint = os.Getenv("HF_ENDPOINT")
		if o.Endpoint == "" {
			o.Endpoint = "https://huggingface.co"
		}
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	switch strings.ToLower(os.Getenv("HF_HUB_OFFLINE")) {
	case "1", "true", "yes", "on":
		o.Offline = true
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	return o
}

var (
	repoIDRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commitHashRe = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// repoFolder is the cache folder name of a model repo: models--org--name.
func repoFolder(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

// Resolve turns a --model argument into a path Open accepts:
//   - an existing directory or file is returned as is;
//   - "org/name" is looked up in the HF hub cache (refs/<revision> → snapshots/<commit>,
//     or snapshots/<revision> when the revision is a commit hash), then as a fair-esm
//     <TorchHubDir>/checkpoints/<name>.pt, then downloaded unless offline;
//   - a bare "name" (esm2_t33_650M_UR50D) is looked up in the torch hub cache, then as
//     "facebook/name" as above.
//
// The error lists every place looked at.
func Resolve(ctx context.Context, model string, opts ResolveOptions) (string, error) {
	if model == "" {
		return "", errors.New("resolve model: empty model name")
	}
	if _, err := os.Stat(model); err == nil {
		return model, nil
	}
	o := opts.withDefaults()
	var looked []string
	repo, name := model, model
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		name = model[i+1:]
	} else {
		repo = "facebook/" + model
	}
	looked = append(looked, "path "+model)
	if !repoIDRe.MatchString(repo) || strings.Contains(repo, "..") {
		return "", fmt.Errorf("resolve model %q: no such file or directory, and not a hub repo id like facebook/esm2_t33_650M_UR50D", model)
	}
	torchPt := filepath.Join(o.TorchHubDir, "checkpoints", name+".pt")
	hfLookup := func() (string, bool) {
		dir, where := findHFSnapshot(o.CacheDir, repo, o.Revision)
		looked = append(looked, where)
		return dir, dir != ""
	}
	ptLookup := func() (string, bool) {
		looked = append(looked, "torch hub "+torchPt)
		return torchPt, fileExists(torchPt)
	}
	order := []func() (string, bool){hfLookup, ptLookup}
	if !strings.Contains(model, "/") {
		order = []func() (string, bool){ptLookup, hfLookup}
	}
	for _, look := range order {
		if p, ok := look(); ok {
			return p, nil
		}
	}
	if o.Offline {
		return "", fmt.Errorf("resolve model %q: not found and offline (HF_HUB_OFFLINE), looked at: %s", model, strings.Join(looked, "; "))
	}
	dir, err := Download(ctx, repo, opts)
	if err != nil {
		return "", fmt.Errorf("resolve model %q: not in the local caches (looked at: %s), and download failed: %w", model, strings.Join(looked, "; "), err)
	}
	return dir, nil
}

// findHFSnapshot returns the complete snapshot directory of repo at rev in cacheDir,
// or "" and a description of where it looked.
func findHFSnapshot(cacheDir, repo, rev string) (dir, where string) {
	base := filepath.Join(cacheDir, repoFolder(repo))
	commit := rev
	where = "HF cache " + filepath.Join(base, "snapshots", rev)
	if !commitHashRe.MatchString(rev) {
		ref := filepath.Join(base, "refs", filepath.FromSlash(rev))
		where = "HF cache " + ref
		b, err := os.ReadFile(ref)
		if err != nil {
			return "", where
		}
		commit = strings.TrimSpace(string(b))
		if !commitHashRe.MatchString(commit) {
			return "", where + " (not a commit hash)"
		}
	}
	snap := filepath.Join(base, "snapshots", commit)
	if !snapshotComplete(snap) {
		return "", where + " → " + snap + " (missing config.json or weights)"
	}
	return snap, where
}

// snapshotComplete reports whether dir has config.json and safetensors weights
// (all shards when sharded).
func snapshotComplete(dir string) bool {
	if !fileExists(filepath.Join(dir, "config.json")) {
		return false
	}
	if fileExists(filepath.Join(dir, "model.safetensors")) {
		return true
	}
	shards, err := shardNames(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		return false
	}
	for _, s := range shards {
		if !fileExists(filepath.Join(dir, s)) {
			return false
		}
	}
	return true
}
