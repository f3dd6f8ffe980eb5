package monitor

import (
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// gpuReader is what the sampler needs from NVML; tests replace it.
type gpuReader interface {
	Init() error
	Count() (int, error)
	// Sample returns device i's utilization (percent of the last sample
	// period in which a kernel ran) and its memory in use and total.
	Sample(i int) (util float64, used, total uint64, err error)
	Shutdown()
}

// nvmlReader reads NVML through go-nvml, which dlopens libnvidia-ml.so.1:
// where it is missing Init returns an error and no GPU figure is reported.
type nvmlReader struct {
	devs []nvml.Device
}

func nvmlErr(op string, r nvml.Return) error {
	return fmt.Errorf("nvml %s: %s", op, nvml.ErrorString(r))
}

func (n *nvmlReader) Init() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml init panicked: %v", r)
		}
	}()
	if r := nvml.Init(); r != nvml.SUCCESS {
		if r == nvml.ERROR_LIBRARY_NOT_FOUND {
			return fmt.Errorf("nvml: libnvidia-ml.so.1 not found")
		}
		return nvmlErr("init", r)
	}
	return nil
}

func (n *nvmlReader) Count() (int, error) {
	c, r := nvml.DeviceGetCount()
	if r != nvml.SUCCESS {
		return 0, nvmlErr("device count", r)
	}
	n.devs = make([]nvml.Device, c)
	for i := range n.devs {
		d, r := nvml.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return 0, nvmlErr(fmt.Sprintf("device %d", i), r)
		}
		n.devs[i] = d
	}
	return c, nil
}

func (n *nvmlReader) Sample(i int) (float64, uint64, uint64, error) {
	d := n.devs[i]
	u, r := d.GetUtilizationRates()
	if r != nvml.SUCCESS {
		return 0, 0, 0, nvmlErr(fmt.Sprintf("device %d utilization", i), r)
	}
	m, r := d.GetMemoryInfo()
	if r != nvml.SUCCESS {
		return 0, 0, 0, nvmlErr(fmt.Sprintf("device %d memory", i), r)
	}
	return float64(u.Gpu), m.Used, m.Total, nil
}

func (n *nvmlReader) Shutdown() { nvml.Shutdown() }

// GPUStat is one device's figures over a window.
type GPUStat struct {
	Index    int     `json:"index"`
	UtilPct  float64 `json:"util_pct"`
	MemUsed  uint64  `json:"mem_used_bytes"`
	MemTotal uint64  `json:"mem_total_bytes"`
}

// gpuAcc accumulates NVML samples between windows (sampler goroutine
// writes, monitor goroutine reads and resets).
type gpuAcc struct {
	mu      sync.Mutex
	devices []int
	sum     []float64 // utilization summed since the last window
	n       []int
	used    []uint64 // latest
	total   []uint64
	peak    uint64 // highest memory in use of any device
	allSum  float64
	allN    int
	failed  bool
}

// window returns the mean utilization per device since the last call and
// the latest memory figures; ok is false when no sample was taken.
func (a *gpuAcc) window() ([]GPUStat, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.devices) == 0 {
		return nil, false
	}
	out := make([]GPUStat, 0, len(a.devices))
	for k, d := range a.devices {
		if a.n[k] == 0 {
			continue
		}
		out = append(out, GPUStat{Index: d, UtilPct: a.sum[k] / float64(a.n[k]), MemUsed: a.used[k], MemTotal: a.total[k]})
		a.sum[k], a.n[k] = 0, 0
	}
	return out, len(out) > 0
}

func (a *gpuAcc) meanUtil() (float64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.allN == 0 {
		return 0, false
	}
	return a.allSum / float64(a.allN), true
}

func (a *gpuAcc) peakUsed() (uint64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peak, a.allN > 0
}

// startGPU initializes NVML and picks the devices. It returns false (and
// why) when there is nothing to sample.
func (m *Monitor) startGPU() (bool, error) {
	r := m.gpu
	if err := r.Init(); err != nil {
		return false, err
	}
	n, err := r.Count()
	if err != nil {
		r.Shutdown()
		return false, err
	}
	devs := m.opts.Devices
	if devs == nil {
		for i := 0; i < n; i++ {
			devs = append(devs, i)
		}
	}
	var keep []int
	for _, d := range devs {
		if d >= 0 && d < n {
			keep = append(keep, d)
		}
	}
	if len(keep) == 0 {
		r.Shutdown()
		return false, fmt.Errorf("nvml: no device among %v (%d present)", devs, n)
	}
	a := &m.acc
	a.devices = keep
	a.sum = make([]float64, len(keep))
	a.n = make([]int, len(keep))
	a.used = make([]uint64, len(keep))
	a.total = make([]uint64, len(keep))
	return true, nil
}

// sampleGPU runs on its own goroutine: every period it reads each device
// and adds to the accumulator. A failing read gives one warning and ends
// sampling; the run goes on.
func (m *Monitor) sampleGPU(period time.Duration) {
	defer m.wg.Done()
	defer m.gpu.Shutdown()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if err := m.sampleOnce(); err != nil {
			m.acc.mu.Lock()
			m.acc.failed = true
			m.acc.mu.Unlock()
			m.warnOnce(&m.gpuWarned, "GPU monitoring stopped (the run goes on)", "err", err)
			return
		}
		select {
		case <-t.C:
		case <-m.stop:
			return
		case <-m.ctx.Done():
			return
		}
	}
}

func (m *Monitor) sampleOnce() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml panicked: %v", r)
		}
	}()
	a := &m.acc
	for k, d := range a.devices {
		u, used, total, err := m.gpu.Sample(d)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.sum[k] += u
		a.n[k]++
		a.used[k], a.total[k] = used, total
		a.allSum += u
		a.allN++
		if used > a.peak {
			a.peak = used
		}
		a.mu.Unlock()
	}
	return nil
}
