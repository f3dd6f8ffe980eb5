package monitor

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// maxUtilPeriod is the longest period over which NVML averages a
// utilization rate (nvml.h, nvmlUtilization_t: "between 1 second and 1/6
// second, depending on the product"). A rate read sooner than this after
// the start (ComputeStarted, else New) may average time before the run
// (model loading, an idle device) and is not counted.
const maxUtilPeriod = time.Second

// utilSample is one of NVML's timestamped utilization samples: the percent
// of the time since the device's previous sample in which a kernel ran.
type utilSample struct {
	ts  uint64 // NVML's timestamp (µs); only compared with other samples'
	pct float64
}

// gpuReader is what the sampler needs from NVML; tests replace it.
type gpuReader interface {
	Init() error
	Count() (int, error)
	// UtilSamples returns device i's utilization samples with timestamps
	// after since, oldest first: none, and no error, when NVML took none
	// (its buffer stays empty while the device idles). After an error (a
	// device without the sample buffer) the sampler uses Util instead.
	UtilSamples(i int, since uint64) ([]utilSample, error)
	// Util returns device i's utilization rate: the percent of NVML's last
	// sample period (up to maxUtilPeriod) in which a kernel ran.
	Util(i int) (float64, error)
	// Memory returns device i's memory in use and total, in bytes.
	Memory(i int) (used, total uint64, err error)
	Shutdown()
}

// GPUStat is one device's figures over a window.
type GPUStat struct {
	Index    int     `json:"index"`
	UtilPct  float64 `json:"util_pct"`
	MemUsed  uint64  `json:"mem_used_bytes"`
	MemTotal uint64  `json:"mem_total_bytes"`
}

// devState is what the sampler knows of one device's utilization samples.
type devState struct {
	last  uint64 // timestamp of the newest sample seen
	inRun bool   // a sample newer than those present at the start was seen
	rates bool   // no sample buffer: utilization rates only
}

// gpuAcc accumulates NVML readings between windows. The sampler goroutine
// and the monitor goroutine (which reads once more at each window's end)
// both read NVML; mu is held across the reads and the window's reset, so
// that a window holds the readings taken up to its end and no later.
type gpuAcc struct {
	mu      sync.Mutex
	done    bool      // sampling ended (NVML shut down)
	start   time.Time // the monitor's clock when utilization started counting (New, then ComputeStarted)
	started bool      // ComputeStarted was called
	devices []int
	dev     []devState
	sum     []float64 // utilization summed since the last window
	n       []int
	used    []uint64 // latest
	total   []uint64
	peak    uint64    // highest memory in use of any device, since New
	runSum  []float64 // per device, over the run
	runN    []int
}

func (a *gpuAcc) add(k int, util float64) {
	a.sum[k] += util
	a.n[k]++
	a.runSum[k] += util
	a.runN[k]++
}

// meanUtilOf is NVML device idx's mean utilization over the run.
func (a *gpuAcc) meanUtilOf(idx int) (float64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := slices.Index(a.devices, idx)
	if k < 0 || a.runN[k] == 0 {
		return 0, false
	}
	return a.runSum[k] / float64(a.runN[k]), true
}

// drain returns the mean utilization per device since the last call and
// the latest memory figures; ok is false when no reading was counted. The
// caller holds mu.
func (a *gpuAcc) drain() ([]GPUStat, bool) {
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

// meanUtil is the mean utilization over the run of every reading of every
// device: the per-device sums added up, so that it is the per-device means
// (meanUtilOf) weighted by their readings.
func (a *gpuAcc) meanUtil() (float64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var sum float64
	var n int
	for k := range a.devices {
		sum += a.runSum[k]
		n += a.runN[k]
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// peakUsed is the highest memory in use of any device since New (memory
// counts from there: what loading takes is the run's too).
func (a *gpuAcc) peakUsed() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peak
}

// startGPU initializes NVML, picks the devices and takes the first reading,
// which marks the start: the utilization samples NVML holds then are older
// than the run and are passed over. ComputeStarted marks it again once the
// model has loaded. It returns false (and why) when there is nothing to
// sample.
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
	devs := slices.Compact(slices.Sorted(slices.Values(m.opts.Devices))) // a repeat is sampled once
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
	a.mu.Lock()
	defer a.mu.Unlock()
	a.devices = keep
	a.dev = make([]devState, len(keep))
	a.sum = make([]float64, len(keep))
	a.n = make([]int, len(keep))
	a.used = make([]uint64, len(keep))
	a.total = make([]uint64, len(keep))
	a.runSum = make([]float64, len(keep))
	a.runN = make([]int, len(keep))
	if err := m.readGPU(readStart); err != nil {
		r.Shutdown()
		a.done = true
		return false, err
	}
	// After the first reading, so that no rate read within maxUtilPeriod
	// of the run's start is counted.
	a.start = m.clock()
	return true, nil
}

// ComputeStarted marks the start of the run's compute, after loading
// (embed.Options.Started): from here on GPU utilization counts, as every
// other figure of the run does (elapsed_s, window_s, rates, shares of wall
// time), so that neither the first window nor the run's mean holds the
// model's loading, when the devices idle. The utilization read before is
// dropped, and the start is marked as in New: the samples NVML holds are
// passed over, so is the first one after (its period began before the
// start), and no rate read within maxUtilPeriod counts. Memory figures
// (the peak) keep counting from New.
//
// One start serves every device: embed opens the devices concurrently
// and computes on none until all are open, so a device that loaded early
// idles until this start as part of loading, and the run's figures (and
// each device's, tokens/s included) count from this one moment. A
// per-device start (each device's model open) would count that wait as
// idle time in the run.
//
// Only the first call counts; without one, utilization counts from New.
// It is safe from any goroutine and returns after one NVML reading of
// each device.
func (m *Monitor) ComputeStarted() {
	if !m.gpuOn {
		return
	}
	a := &m.acc
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return
	}
	a.started = true
	for k := range a.devices {
		a.sum[k], a.n[k], a.runSum[k], a.runN[k] = 0, 0, 0, 0
	}
	if !a.done {
		if err := m.readGPU(readStart); err != nil {
			m.endGPULocked(err)
		}
	}
	// After the reading, as in startGPU.
	a.start = m.clock()
}

// sampleGPU runs on its own goroutine: every period it reads each device
// and adds to the accumulator. A failing read gives one warning and ends
// sampling; the run goes on.
func (m *Monitor) sampleGPU(period time.Duration) {
	defer m.wg.Done()
	defer m.endGPU(nil)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.stop:
			return
		case <-m.ctx.Done():
			return
		}
		if !m.pollGPU() {
			return
		}
	}
}

// pollGPU reads each device once; false when sampling has ended.
func (m *Monitor) pollGPU() bool {
	a := &m.acc
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return false
	}
	if err := m.readGPU(readTick); err != nil {
		m.endGPULocked(err)
		return false
	}
	return true
}

// gpuWindow reads each device at the window's end, so that the samples
// NVML took up to the end count in this window, and returns the window's
// figures (ok false when no reading was counted).
func (m *Monitor) gpuWindow() ([]GPUStat, bool) {
	a := &m.acc
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.done {
		if err := m.readGPU(readWindowEnd); err != nil {
			m.endGPULocked(err)
		}
	}
	return a.drain()
}

// endGPU ends sampling: NVML is shut down once, and a read error gives
// one warning.
func (m *Monitor) endGPU(err error) {
	m.acc.mu.Lock()
	defer m.acc.mu.Unlock()
	m.endGPULocked(err)
}

func (m *Monitor) endGPULocked(err error) {
	if err != nil {
		m.warnOnce(&m.gpuWarned, "GPU monitoring stopped (the run goes on)", "err", err)
	}
	if !m.acc.done {
		m.acc.done = true
		m.gpu.Shutdown()
	}
}

// readKind says why a reading is taken.
type readKind int

const (
	readStart     readKind = iota // the start: in New, then ComputeStarted
	readTick                      // the sampler's period
	readWindowEnd                 // a window's end
)

// readGPU reads each device once (acc.mu held). Only utilization that
// averages time after the start (ComputeStarted, after the model has
// loaded; New until then or without it) is counted, so that a window's
// figure and the run's mean are the device's activity within the run:
//
//   - NVML's timestamped samples (GetSamples), each the utilization since
//     the device's previous sample. Those present at the start are passed
//     over, and so is the first one after: its period began before the
//     start. Each window counts the samples taken up to its end.
//   - Utilization rates (GetUtilizationRates), an average over the last
//     sample period of up to maxUtilPeriod, counted only once that long has
//     passed since the start: at the start of a run the period covers the
//     time before it, and an idle model load read as an idle device. Rates
//     are the figure where a device has no sample buffer, and a window's
//     figure where NVML took no sample in it (its buffer stays empty while
//     the device idles).
func (m *Monitor) readGPU(why readKind) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml panicked: %v", r)
		}
	}()
	a := &m.acc
	settled := why != readStart && m.clock().Sub(a.start) >= maxUtilPeriod
	for k, d := range a.devices {
		ds := &a.dev[k]
		if why == readStart {
			ds.inRun = false // the first sample after a start spans it
		}
		if !ds.rates {
			ss, err := m.gpu.UtilSamples(d, ds.last)
			if err != nil {
				ds.rates = true
				m.log.Debug("no NVML utilization samples; using utilization rates", "device", d, "err", err)
			}
			for _, s := range ss {
				if s.ts <= ds.last {
					continue
				}
				ds.last = s.ts
				switch {
				case why == readStart:
				case !ds.inRun:
					ds.inRun = true
				default:
					a.add(k, s.pct)
				}
			}
		}
		if settled && (ds.rates || why == readWindowEnd && a.n[k] == 0) {
			u, err := m.gpu.Util(d)
			if err != nil {
				return err
			}
			a.add(k, u)
		}
		used, total, err := m.gpu.Memory(d)
		if err != nil {
			return err
		}
		a.used[k], a.total[k] = used, total
		a.peak = max(a.peak, used)
	}
	return nil
}
