package metering

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are metering's Prometheus metrics.
type metrics struct {
	reg      *prometheus.Registry
	folded   prometheus.Counter
	dupes    prometheus.Counter
	alerts   prometheus.Counter
	batchDur prometheus.Histogram
	lag      prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(),
		folded: prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_metering_events_folded_total", Help: "Usage events folded into balances."}),
		dupes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_metering_events_duplicate_total", Help: "Usage events recognised as already folded and skipped."}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_metering_alerts_total", Help: "Alerts raised."}),
		batchDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_metering_fold_seconds", Help: "Time to fold and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_metering_fold_lag_seconds", Help: "From a request's start at the edge to the commit that folded it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	m.reg.MustRegister(m.folded, m.dupes, m.alerts, m.batchDur, m.lag, prometheus.NewGoCollector(),
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// serveOps serves /metrics, /healthz and /readyz on addr until ctx ends.
func serveOps(ctx context.Context, addr string, m *metrics, nc *nats.Conn, pool *pgxpool.Pool, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if nc.Status() != nats.CONNECTED || pool.Ping(pctx) != nil {
			http.Error(w, "nats or postgres unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("metering metrics listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
