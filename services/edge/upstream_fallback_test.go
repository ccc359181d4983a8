package edge

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/h1"
)

// A request through a proxy (net/http's Transport, the fallback) that gets
// no answer in time is h1.ErrNoAnswer, as one sent directly: 504, and its
// input charged. It was a 502 that cost nothing.
func TestFallbackTimeoutIsNoAnswer(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	f := noAnswerFallback{newTransport(100 * time.Millisecond)}
	defer f.CloseIdleConnections()
	req, _ := http.NewRequest("POST", slow.URL, nil)
	_, err := f.RoundTrip(req)
	if !errors.Is(err, h1.ErrNoAnswer) {
		t.Fatalf("error %v, want h1.ErrNoAnswer", err)
	}
	// Other failures are not.
	req, _ = http.NewRequest("POST", "http://127.0.0.1:1", nil)
	if _, err := f.RoundTrip(req); err == nil || errors.Is(err, h1.ErrNoAnswer) {
		t.Fatalf("error %v for a refused connection, want an error that is not h1.ErrNoAnswer", err)
	}
}
