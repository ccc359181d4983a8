// Package localdb starts and stops throwaway or developer-local database
// servers (PostgreSQL and ClickHouse) as child processes of the calling
// program. Tests use it through pkg/testenv; the `tollgate dev` role uses it
// to run everything on one machine without a container engine.
//
// Every server is a direct child of this process, so it is always reaped
// (no zombies) and, on Linux, it is signalled to shut down if this process
// dies without stopping it. Server output goes to a log file in the server's
// directory, never to the caller's stdout/stderr; startup errors carry the
// tail of that log.
package localdb
