package localdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgresConfig says where and how to run a local PostgreSQL server.
type PostgresConfig struct {
	// Dir holds everything: the cluster in Dir/data, the server log in
	// Dir/postgres.log and the unix socket. It is created if missing.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Fsync turns on durable writes. Off (fsync, full_page_writes and
	// synchronous_commit all off) is much faster and fine for tests: a
	// crash of the machine, not of the server, can then lose data.
	Fsync  bool
	Logger *slog.Logger
}

// Postgres is a running PostgreSQL server started by StartPostgres.
type Postgres struct {
	dir     string
	dataDir string
	port    int
	log     *slog.Logger
	proc    *child
}

const (
	// pgFastShutdown makes the postmaster disconnect clients, checkpoint and exit.
	pgFastShutdown = syscall.SIGINT
	// pgStopGrace is how long a fast shutdown may take before we kill.
	pgStopGrace = 30 * time.Second
	// maxSocketPath is the room in sockaddr_un.sun_path (107 bytes and a NUL).
	maxSocketPath = 107
)

// StartPostgres starts PostgreSQL on cfg.Dir, creating the cluster the first
// time and reusing it (and its data) afterwards. It returns once the server
// accepts connections, or fails after 30 seconds.
//
// When running as root, the server runs as the postgres user (PostgreSQL
// refuses root): Dir is handed to that user, and parent directories that
// user could not enter get the search bit for others (never read).
//
// A postmaster left running on Dir by an earlier run that crashed is shut
// down (fast shutdown, so no data is lost) and a fresh one started: we cannot
// reap or supervise a process that is not our child, and its port may not be
// the one asked for.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start postgres: no directory given")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, dataDir: filepath.Join(dir, "data"), log: loggerOrDiscard(cfg.Logger)}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	cred, err := postgresCredential(dir, p.log)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := p.stopStale(ctx); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := p.initCluster(ctx, binDir, cfg.Fsync, cred); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, fmt.Errorf("start postgres: %w", err)
			}
		}
		began := time.Now()
		err = p.start(ctx, binDir, port, cfg.Fsync, cred)
		if err == nil {
			p.log.Info("postgres ready", "port", port, "dir", dir, "took", time.Since(began).Round(time.Millisecond))
			return p, nil
		}
		if cfg.Port != 0 || attempt == portAttempts || !errors.Is(err, errPortTaken) {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		p.log.Warn("postgres port was taken, retrying with another", "port", port)
	}
}

// DSN returns a pgx-compatible URL for database on this server.
func (p *Postgres) DSN(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     "127.0.0.1:" + strconv.Itoa(p.port),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port the server listens on (127.0.0.1 only).
func (p *Postgres) Port() int { return p.port }

// LogPath is the file the server writes its log to.
func (p *Postgres) LogPath() string { return p.proc.logPath }

// Done is closed when the server process has exited, whether through Stop
// or unexpectedly.
func (p *Postgres) Done() <-chan struct{} { return p.proc.done }

// Stop shuts the server down (fast shutdown: clients are disconnected and the
// data is checkpointed) and waits for it to exit. It kills the server if that
// takes longer than 30 seconds or ctx ends first. Calling it again is a no-op.
func (p *Postgres) Stop(ctx context.Context) error {
	if err := p.proc.stop(ctx, pgFastShutdown, pgStopGrace); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	return nil
}

// CreateDatabase creates the database unless it already exists.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	if err := checkDatabaseName(name); err != nil {
		return err
	}
	err := p.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create postgres database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops the database if it exists, disconnecting its clients.
func (p *Postgres) DropDatabase(ctx context.Context, name string) error {
	if err := checkDatabaseName(name); err != nil {
		return err
	}
	if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop postgres database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement on the maintenance database "postgres".
func (p *Postgres) exec(ctx context.Context, sql string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// initCluster runs initdb unless Dir already holds a cluster.
func (p *Postgres) initCluster(ctx context.Context, binDir string, fsync bool, cred *syscall.Credential) error {
	if _, err := os.Stat(filepath.Join(p.dataDir, "PG_VERSION")); err == nil {
		p.log.Info("reusing postgres cluster", "dir", p.dataDir)
		return nil
	}
	// initdb writes PG_VERSION early, so a data directory without it is what
	// an interrupted initdb left behind: nothing worth keeping.
	if _, err := os.Stat(p.dataDir); err == nil {
		p.log.Warn("removing incomplete postgres cluster", "dir", p.dataDir)
		if err := os.RemoveAll(p.dataDir); err != nil {
			return fmt.Errorf("remove incomplete cluster: %w", err)
		}
	}
	logPath := filepath.Join(p.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close()
	var from int64
	if st, err := logFile.Stat(); err == nil {
		from = st.Size()
	}
	args := []string{"-D", p.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"}
	if !fsync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
	p.prepare(cmd, cred)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	began := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w%s", err, logTail(logPath, from))
	}
	p.log.Info("created postgres cluster", "dir", p.dataDir, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// errPortTaken marks a start that failed because the port was in use.
var errPortTaken = errors.New("port already in use")

// start runs the postmaster on port and waits until it accepts connections.
func (p *Postgres) start(ctx context.Context, binDir string, port int, fsync bool, cred *syscall.Credential) error {
	args := []string{"-D", p.dataDir, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1"}
	socketDir := p.dir
	if len(socketDir)+len("/.s.PGSQL.")+len(strconv.Itoa(port)) > maxSocketPath {
		p.log.Warn("directory path too long for a unix socket; listening on TCP only", "dir", p.dir)
		socketDir = ""
	}
	args = append(args, "-c", "unix_socket_directories="+socketDir)
	if !fsync {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	p.prepare(cmd, cred)
	proc, err := startChild("postgres", cmd, filepath.Join(p.dir, "postgres.log"), pgFastShutdown)
	if err != nil {
		return err
	}
	p.proc, p.port = proc, port
	if err := p.waitReady(ctx); err != nil {
		_ = proc.stop(context.Background(), syscall.SIGKILL, 0)
		if proc.portClash() {
			return fmt.Errorf("%w: port %d: %w", errPortTaken, port, err)
		}
		return err
	}
	return nil
}

// waitReady polls until the server accepts a connection, it exits, or ctx ends.
func (p *Postgres) waitReady(ctx context.Context) error {
	for {
		select {
		case <-p.proc.done:
			return p.proc.exitError()
		default:
		}
		attemptCtx, cancel := p.proc.untilExit(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, p.DSN("postgres"))
		if err == nil {
			_ = conn.Close(attemptCtx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready (%w, startup limit %s): last attempt: %v%s", ctx.Err(), startupTimeout, err, logTail(p.proc.logPath, p.proc.logFrom))
		case <-p.proc.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// prepare sets what every PostgreSQL program we run needs.
func (p *Postgres) prepare(cmd *exec.Cmd, cred *syscall.Credential) {
	cmd.Dir = p.dir
	// LC_ALL=C keeps messages in English, which startup error detection reads.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
}

// stopStale shuts down a postmaster that an earlier, crashed run left on Dir.
func (p *Postgres) stopStale(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "postmaster.pid"))
	if err != nil {
		return nil // no pid file: no postmaster, or it exited cleanly
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || !processRunning(pid, "postgres", p.dataDir) {
		return nil // a stale file from a dead server; postgres ignores it
	}
	p.log.Warn("stopping postgres left running by an earlier run", "pid", pid, "dir", p.dataDir)
	return stopStale(ctx, pid, "postgres", p.dataDir, pgFastShutdown)
}

// postgresBinDir finds the server binaries: `pg_config --bindir`, else the
// newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH).
func postgresBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVersion := "", -1.0
	for _, m := range matches {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(m))), 64)
		if err == nil && v > bestVersion {
			best, bestVersion = filepath.Dir(m), v
		}
	}
	if best == "" {
		return "", errors.New("postgres server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin): run scripts/deps.sh")
	}
	return best, nil
}
