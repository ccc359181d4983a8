package sink

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// histograms are the sink's timings; its counters are Stats.
type histograms struct {
	batch prometheus.Histogram
	lag   prometheus.Histogram
}

func newHistograms() histograms {
	return histograms{
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_sink_batch_seconds",
			Help: "Time to write one batch into ClickHouse, look-up and repairs included.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_sink_lag_seconds",
			Help: "From the newest request of a batch to the batch being written.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}),
	}
}

// registry is the sink's Prometheus registry: Stats as counters, the
// histograms, and the Go and process collectors.
func (s *Sink) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	reg.MustRegister(
		counter("tollgate_sink_events_written_total", "Usage events inserted into ClickHouse.", s.stats.Events.Load),
		counter("tollgate_sink_events_duplicate_total", "Usage events recognised as stored already and skipped.", s.stats.Duplicates.Load),
		counter("tollgate_sink_messages_invalid_total", "USAGE messages that are not usage events (skipped).", s.stats.Invalid.Load),
		counter("tollgate_sink_batches_total", "Batches written.", s.stats.Batches.Load),
		counter("tollgate_sink_repairs_total", "Batches whose write had an unknown outcome and was repaired.", s.stats.Repairs.Load),
		s.hist.batch, s.hist.lag,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	return reg
}

// observe records a written batch.
func (s *Sink) observe(began time.Time, newest time.Time) {
	s.hist.batch.Observe(time.Since(began).Seconds())
	if !newest.IsZero() {
		s.hist.lag.Observe(time.Since(newest).Seconds())
	}
}
