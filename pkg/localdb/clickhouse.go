package localdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouseConfig says where and how to run a local ClickHouse server.
type ClickHouseConfig struct {
	// Dir holds the generated config files, the data (Dir/data) and the
	// server log (Dir/clickhouse-server.log). It is created if missing.
	Dir string
	// TCPPort (native protocol) and HTTPPort listen on 127.0.0.1; 0 picks a
	// free port.
	TCPPort, HTTPPort int
	Logger            *slog.Logger
}

// ClickHouse is a running ClickHouse server started by StartClickHouse.
type ClickHouse struct {
	dir      string
	tcpPort  int
	httpPort int
	log      *slog.Logger
	proc     *child
}

// chStopGrace is how long ClickHouse may take to exit after SIGTERM.
const chStopGrace = 15 * time.Second

// StartClickHouse writes a config into cfg.Dir and starts clickhouse-server
// with it, reusing any data already there. It returns once the server answers
// on the native protocol, or fails after 30 seconds.
//
// A server left running on Dir by an earlier run that crashed holds a lock on
// the data; it is stopped (SIGTERM) first, for the reasons given on
// StartPostgres.
func StartClickHouse(ctx context.Context, cfg ClickHouseConfig) (*ClickHouse, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start clickhouse: no directory given")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start clickhouse: %w", err)
	}
	bin, err := clickhouseBinary()
	if err != nil {
		return nil, err
	}
	c := &ClickHouse{dir: dir, log: loggerOrDiscard(cfg.Logger)}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start clickhouse: %w", err)
	}
	if err := c.stopStale(ctx); err != nil {
		return nil, fmt.Errorf("start clickhouse: %w", err)
	}
	for attempt := 1; ; attempt++ {
		if c.tcpPort, c.httpPort, err = pickPorts(cfg.TCPPort, cfg.HTTPPort); err != nil {
			return nil, fmt.Errorf("start clickhouse: %w", err)
		}
		began := time.Now()
		err = c.start(ctx, bin)
		if err == nil {
			c.log.Info("clickhouse ready", "addr", c.Addr(), "http_port", c.httpPort, "dir", dir,
				"took", time.Since(began).Round(time.Millisecond))
			return c, nil
		}
		// Only retry when we chose both ports: a clash on a port the
		// caller chose would just happen again.
		picked := cfg.TCPPort == 0 && cfg.HTTPPort == 0
		if !picked || attempt == portAttempts || !errors.Is(err, errPortTaken) {
			return nil, fmt.Errorf("start clickhouse: %w", err)
		}
		c.log.Warn("clickhouse port was taken, retrying with others", "tcp_port", c.tcpPort, "http_port", c.httpPort)
	}
}

// Addr is host:port of the native protocol, for clickhouse.Options.Addr.
func (c *ClickHouse) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.tcpPort))
}

// HTTPPort is the port of the HTTP interface on 127.0.0.1.
func (c *ClickHouse) HTTPPort() int { return c.httpPort }

// LogPath is the file the server writes its log (warnings and errors) to.
func (c *ClickHouse) LogPath() string { return c.proc.logPath }

// Done is closed when the server process has exited, whether through Stop
// or unexpectedly.
func (c *ClickHouse) Done() <-chan struct{} { return c.proc.done }

// Stop sends SIGTERM and waits for the server to exit, killing it if that
// takes longer than 15 seconds or ctx ends first. Calling it again is a no-op.
func (c *ClickHouse) Stop(ctx context.Context) error {
	if err := c.proc.stop(ctx, syscall.SIGTERM, chStopGrace); err != nil {
		return fmt.Errorf("stop clickhouse: %w", err)
	}
	return nil
}

// CreateDatabase creates the database unless it already exists.
func (c *ClickHouse) CreateDatabase(ctx context.Context, name string) error {
	if err := checkDatabaseName(name); err != nil {
		return err
	}
	if err := c.exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+name+"`"); err != nil {
		return fmt.Errorf("create clickhouse database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops the database and its tables if it exists.
func (c *ClickHouse) DropDatabase(ctx context.Context, name string) error {
	if err := checkDatabaseName(name); err != nil {
		return err
	}
	if err := c.exec(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
		return fmt.Errorf("drop clickhouse database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement through the native protocol (the only one
// clickhouse-go speaks with 18.16), always under a deadline.
func (c *ClickHouse) exec(ctx context.Context, sql string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := c.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, sql)
}

func (c *ClickHouse) open() (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{c.Addr()},
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 2 * time.Second,
	})
}

// start launches the server on the chosen ports and waits until it answers.
func (c *ClickHouse) start(ctx context.Context, bin string) error {
	configPath, err := c.writeConfig()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--config-file="+configPath)
	cmd.Dir = c.dir
	proc, err := startChild("clickhouse-server", cmd, filepath.Join(c.dir, "clickhouse-server.log"), syscall.SIGTERM)
	if err != nil {
		return err
	}
	c.proc = proc
	if err := c.waitReady(ctx); err != nil {
		_ = proc.stop(context.Background(), syscall.SIGKILL, 0)
		if proc.portClash() {
			return fmt.Errorf("%w: ports %d/%d: %w", errPortTaken, c.tcpPort, c.httpPort, err)
		}
		return err
	}
	return nil
}

// waitReady pings over the native protocol until the server answers, it
// exits, or ctx ends.
func (c *ClickHouse) waitReady(ctx context.Context) error {
	for {
		select {
		case <-c.proc.done:
			return c.proc.exitError()
		default:
		}
		err := c.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse not ready (%w, startup limit %s): last attempt: %v%s", ctx.Err(), startupTimeout, err, logTail(c.proc.logPath, c.proc.logFrom))
		case <-c.proc.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *ClickHouse) ping(ctx context.Context) error {
	ctx, cancel := c.proc.untilExit(ctx, 2*time.Second)
	defer cancel()
	conn, err := c.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Ping(ctx)
}

// stopStale stops a server that an earlier, crashed run left on Dir. A
// running server keeps its PID in data/status; a clean exit removes the file.
func (c *ClickHouse) stopStale(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(c.dir, "data", "status"))
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(first, "PID:")))
	configPath := filepath.Join(c.dir, "config.xml")
	if err != nil || !processRunning(pid, "clickhouse", configPath) {
		return nil
	}
	c.log.Warn("stopping clickhouse left running by an earlier run", "pid", pid, "dir", c.dir)
	return stopStale(ctx, pid, "clickhouse", configPath, syscall.SIGTERM)
}

// clickhouseBinary finds clickhouse-server: on PATH, else in /usr/sbin
// (Debian's place, which is not on an ordinary user's PATH) or /usr/bin.
func clickhouseBinary() (string, error) {
	if bin, err := exec.LookPath("clickhouse-server"); err == nil {
		return bin, nil
	}
	for _, bin := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	return "", errors.New("start clickhouse: clickhouse-server not found on PATH, in /usr/sbin or /usr/bin: run scripts/deps.sh")
}

// pickPorts returns the requested ports, with free ones in place of zeros.
func pickPorts(tcp, http int) (int, int, error) {
	var err error
	if tcp == 0 {
		if tcp, err = FreePort(); err != nil {
			return 0, 0, err
		}
	}
	for http == 0 {
		if http, err = FreePort(); err != nil {
			return 0, 0, err
		}
		if http == tcp { // FreePort can repeat itself; both must differ
			http = 0
		}
	}
	return tcp, http, nil
}
