package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
)

// client is the operator CLI's connection to the admin API and its global
// flags, shared by every `tollgate keys ...` command.
type client struct {
	adminURL, token, account string
	json                     bool
	keys                     adminv1connect.KeyServiceClient
	help                     io.Writer // where --help goes: the command's standard output
}

func newClient(stdout io.Writer) *client {
	cl := &client{adminURL: "http://127.0.0.1:8081", account: "", help: stdout}
	if v := os.Getenv("TOLLGATE_ADMIN_URL"); v != "" {
		cl.adminURL = v
	}
	cl.token = os.Getenv("TOLLGATE_ADMIN_TOKEN")
	cl.account = os.Getenv("TOLLGATE_ACCOUNT")
	return cl
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func (cl *client) flagSet(name, usage string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tollgate "+name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&cl.adminURL, "admin-url", cl.adminURL, "admin API URL (env TOLLGATE_ADMIN_URL)")
	fs.StringVar(&cl.token, "token", cl.token, "operator token or API key with READ/WRITE (env TOLLGATE_ADMIN_TOKEN)")
	fs.Lookup("token").DefValue = "" // the usage must not print the token from the environment
	fs.StringVar(&cl.account, "account", cl.account, "account to act on (env TOLLGATE_ACCOUNT; default: the credential's own)")
	fs.BoolVar(&cl.json, "json", false, "print JSON for scripts")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tollgate %s %s\n\nFlags:\n%s", name, usage, fs.FlagUsages())
	}
	return fs
}

// parse parses args and wants exactly nargs positional arguments.
func (cl *client) parse(fs *pflag.FlagSet, args []string, nargs int) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(cl.help)
			fs.Usage()
			return errHelpShown
		}
		return usageErrorf("%s: %v (see --help)", fs.Name(), err)
	}
	if fs.NArg() != nargs {
		return usageErrorf("%s: want %d argument(s), got %d: %q (see --help)", fs.Name(), nargs, fs.NArg(), fs.Args())
	}
	if cl.token == "" {
		return usageErrorf("no credential: pass --token or set TOLLGATE_ADMIN_TOKEN (make dev writes one to .data/admin-token)")
	}
	httpClient := &http.Client{Timeout: 30 * time.Second}
	cl.keys = adminv1connect.NewKeyServiceClient(httpClient, strings.TrimRight(cl.adminURL, "/"),
		connect.WithInterceptors(bearer(cl.token)))
	return nil
}

// errHelpShown ends a command that printed its help: exit code 0.
var errHelpShown = errors.New("help shown")

func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

type command func(ctx context.Context, cl *client, args []string, out io.Writer) error

var keyCommands = map[string]command{
	"create": keysCreate, "list": keysList, "get": keysGet,
	"update": keysUpdate, "revoke": keysRevoke, "rotate": keysRotate, "balance": keysBalance,
}

const keysUsage = `Usage: tollgate keys <command> [flags]

Commands:
  create --name NAME [flags]   create a key; prints its secret once
  list [flags]                 list keys
  get ID                       show a key
  update ID [flags]            change the settings given as flags
  revoke ID                    revoke a key at once
  rotate ID [--grace 10m]      issue a new secret; prints it once
  balance ID                   per limit: amount, used, available, when it resets

Run 'tollgate keys <command> --help' for the flags of a command.
`

// runKeys runs `tollgate keys ...` and returns the process exit code:
// 0 done, 1 the admin API refused or failed, 2 a mistake in the command line.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runGroup(ctx, "keys", keysUsage, keyCommands, args, stdout, stderr)
}

// runGroup runs `tollgate <group> <command> ...`, one of commands, and
// returns the exit code; with no command (exit 2) or for help (exit 0) it
// prints usage.
func runGroup(ctx context.Context, group, usage string, commands map[string]command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tollgate %s: unknown command %q\n\n%s", group, args[0], usage)
		return 2
	}
	return reportError(stderr, cmd(ctx, newClient(stdout), args[1:], stdout))
}

// reportError prints err so that a person can act on it, and picks the exit code.
func reportError(w io.Writer, err error) int {
	var ue *usageError
	var ce *connect.Error
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(w, "error: %s\n", ue.msg)
		return 2
	case errors.As(err, &ce):
		if fields := fieldViolations(ce); len(fields) > 0 {
			fmt.Fprintf(w, "error: the admin API rejected the request (%s); fix these and try again:\n", ce.Code())
			for _, f := range fields {
				fmt.Fprintf(w, "  %s: %s\n", f.GetField(), f.GetDescription())
			}
			return 1
		}
		fmt.Fprintf(w, "error: %s (%s)\n", ce.Message(), ce.Code())
		if ce.Code() == connect.CodeUnavailable {
			fmt.Fprintln(w, "is the admin API running? (make dev starts one on 127.0.0.1:8081; see --admin-url)")
		}
		return 1
	default:
		fmt.Fprintf(w, "error: %s\n", err)
		return 1
	}
}

func fieldViolations(ce *connect.Error) []*errdetails.BadRequest_FieldViolation {
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if br, ok := v.(*errdetails.BadRequest); ok {
				out = append(out, br.GetFieldViolations()...)
			}
		}
	}
	return out
}
