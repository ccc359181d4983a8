package edge

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the edge's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_edge_requests_total", Help: "Requests answered, by endpoint and status.",
	}, []string{"endpoint", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tollgate_edge_request_seconds", Help: "Time from request to the end of the answer, upstream included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"endpoint"})
	m.reg.MustRegister(m.requests, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_edge_keys", Help: "Keys held in memory."},
			func() float64 { return float64(s.keys.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_edge_usage_published_total", Help: "Usage events acknowledged by the bus."},
			func() float64 { p, _ := s.usage.Stats(); return float64(p) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_edge_usage_spooled_total", Help: "Usage events written to the spool while the bus was away."},
			func() float64 { _, sp := s.usage.Stats(); return float64(sp) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_edge_bus_connected", Help: "1 while the NATS connection is up."},
			func() float64 {
				if s.busUp() {
					return 1
				}
				return 0
			}),
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// middleware counts every answer, refusals included, by route and status.
func (m *metrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unknown"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status written and counts the body bytes the
// client connection took (a usage event's response_bytes, whoever wrote
// them: an answer passed on or an error of the edge's own). Unwrap lets
// http.ResponseController reach the real writer (Flush for streams).
type statusWriter struct {
	http.ResponseWriter
	status  int
	written int64
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// bytesWritten is the body bytes written to w so far.
func bytesWritten(w http.ResponseWriter) int64 {
	if sw, ok := w.(*statusWriter); ok {
		return sw.written
	}
	return 0
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
