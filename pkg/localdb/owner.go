package localdb

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// postgresCredential returns the identity to run PostgreSQL programs as, or
// nil to run them as ourselves. PostgreSQL refuses to run as root, so as root
// we switch to the postgres user (created by Debian's postgresql package) and
// make sure it owns dir and can reach it.
//
// Switching in the child (SysProcAttr.Credential) rather than through
// runuser/su keeps the server our direct child: su-style wrappers relay only
// some signals and kill the server with SIGKILL two seconds after SIGTERM.
func postgresCredential(dir string, log *slog.Logger) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so postgres must run as the postgres user, which is missing (%w): run scripts/deps.sh or run as another user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("postgres user ids: %w", err)
	}
	if err := ensureSearchable(dir, uint32(uid), log); err != nil {
		return nil, err
	}
	if err := chownTree(dir, int(uid), int(gid)); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// ensureSearchable adds the search (x) bit for others to every parent of dir
// that uid does not own and others cannot enter. Directories from
// os.MkdirTemp (t.TempDir among them) are 0700, which would otherwise keep
// the postgres user out of its own data directory. Nothing becomes listable.
func ensureSearchable(dir string, uid uint32, log *slog.Logger) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check %s: %w", p, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok && sys.Uid != uid && st.Mode().Perm()&0o001 == 0 {
			log.Info("allowing the postgres user to traverse a parent directory", "dir", p)
			if err := os.Chmod(p, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let postgres traverse %s: %w", p, err)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// chownTree gives dir and everything in it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == uid && int(sys.Gid) == gid {
			return nil
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("give %s to the postgres user: %w", dir, err)
	}
	return nil
}
