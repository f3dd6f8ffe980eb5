package monitor

// leakDetector fires when RSS grows by more than bytes in each of windows
// consecutive windows while neither queue reaches a new high-water mark
// (growth a filling queue explains is not a leak). It fires once per
// streak.
type leakDetector struct {
	windows int
	bytes   int64

	have       bool
	prev       int64
	hwQ, hwR   int
	streak     int
	streakBase int64
	fired      bool
}

func (l *leakDetector) observe(rss int64, queue, readerQueue int) (fire bool, growth int64) {
	if !l.have {
		l.have, l.prev, l.hwQ, l.hwR = true, rss, queue, readerQueue
		return false, 0
	}
	bounded := queue <= l.hwQ && readerQueue <= l.hwR
	l.hwQ, l.hwR = max(l.hwQ, queue), max(l.hwR, readerQueue)
	if rss-l.prev > l.bytes && bounded {
		if l.streak == 0 {
			l.streakBase = l.prev
		}
		l.streak++
	} else {
		l.streak, l.fired = 0, false
	}
	l.prev = rss
	if l.streak >= l.windows && !l.fired {
		l.fired = true
		return true, rss - l.streakBase
	}
	return false, 0
}
