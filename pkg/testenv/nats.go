package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS starts an embedded NATS server with JetStream for this test and
// returns it with a connected client. Both are shut down when the test ends.
func NATS(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	h := NATSRestartable(t)
	nc, err := nats.Connect(h.URL(), nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("testenv: connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close) // runs before the server's cleanup (LIFO)
	return h.Server(), nc
}

// NATSHandle is an embedded NATS JetStream server that a test can stop and
// start again on the same port and store directory, to exercise what happens
// when the bus goes away and comes back. Its methods are safe for concurrent
// use.
type NATSHandle struct {
	storeDir string
	mu       sync.Mutex
	port     int
	srv      *server.Server // nil while shut down
}

// NATSRestartable starts an embedded NATS JetStream server that the test can
// shut down and restart; it is shut down when the test ends.
func NATSRestartable(t testing.TB) *NATSHandle {
	t.Helper()
	h := &NATSHandle{storeDir: t.TempDir(), port: server.RANDOM_PORT}
	if err := h.Start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(h.Shutdown)
	return h
}

// URL is the client URL; it stays the same across restarts.
func (h *NATSHandle) URL() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(h.port))
}

// Server is the running server, or nil while it is shut down.
func (h *NATSHandle) Server() *server.Server {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srv
}

// Shutdown stops the server and waits until it has stopped. Clients see the
// connection drop. It does nothing if the server is already down.
func (h *NATSHandle) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return
	}
	h.srv.Shutdown()
	h.srv.WaitForShutdown()
	h.srv = nil
}

// Start starts the server again after Shutdown, on the same port and with
// the same JetStream store, so streams and clients that reconnect carry on.
// It does nothing if the server is running.
func (h *NATSHandle) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return nil
	}
	if err := waitPortFree(h.port, 5*time.Second); err != nil {
		return err
	}
	srv, err := startNATS(h.storeDir, h.port)
	if err != nil {
		return err
	}
	h.srv, h.port = srv, srv.Addr().(*net.TCPAddr).Port
	return nil
}

// waitPortFree waits until port can be bound again. A NATS server that cannot
// listen does not fail; it only never gets ready, so without this check a
// port taken in the meantime would cost the whole readiness timeout.
func waitPortFree(port int, timeout time.Duration) error {
	if port == server.RANDOM_PORT {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return l.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restart NATS: port %d still busy: %w", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart shuts the server down and starts it again (see Start).
func (h *NATSHandle) Restart() error {
	h.Shutdown()
	return h.Start()
}

// startNATS starts one server. It logs nothing: NewServer without
// ConfigureLogger has no logger, and NoSigs leaves the test's signals alone.
func startNATS(storeDir string, port int) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "testenv",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("create NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("NATS server not ready for connections after 10s (port taken?)")
	}
	return ns, nil
}

// natsChildEnv, set in a test binary's environment, makes Main run a NATS
// server instead of the tests (see NATSProcess). Its value is the store
// directory.
const natsChildEnv = "TOLLGATE_TESTENV_NATS_CHILD"

// NATSProcess starts a NATS JetStream server in a process of its own (this
// test binary run again) and returns a client connected to it. A benchmark
// uses it so that the server's heap and garbage collection stay out of the
// process it measures, as in production, where NATS runs apart. The process
// ends with the test (and by itself if the test binary dies: it exits when
// its standard input closes).
func NATSProcess(t testing.TB) *nats.Conn {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), natsChildEnv+"="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start NATS process: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // it may have just exited
			<-done
		}
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("testenv: NATS process did not start: %v", err)
	}
	nc, err := nats.Connect(strings.TrimSpace(url), nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("testenv: connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// runNATSChild is the NATS process of NATSProcess: it prints the client URL,
// serves until its standard input closes, and exits.
func runNATSChild(storeDir string) {
	ns, err := startNATS(storeDir, server.RANDOM_PORT)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	fmt.Println(ns.ClientURL())
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // EOF or error: the parent is gone
	ns.Shutdown()
	ns.WaitForShutdown()
	os.Exit(0)
}
