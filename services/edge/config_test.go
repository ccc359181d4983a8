package edge

import (
	"strings"
	"testing"
)

func TestConfigInstanceNames(t *testing.T) {
	for _, tt := range []struct {
		instance string
		ok       bool
	}{
		{"", true}, // the host name is used
		{"edge-eu-1", true},
		{"edge_1.prod", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"edge/1", false}, // would leave the spool directory
		{"edge:1", false}, // would make event ids ambiguous
		{"edge 1", false},
		{"édge", false},
	} {
		cfg := DefaultConfig()
		cfg.NATSURL, cfg.Pepper, cfg.SpoolDir, cfg.Instance = "nats://127.0.0.1:4222", testPepper, t.TempDir(), tt.instance
		err := cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("instance %q: Validate() = %v, want ok %v", tt.instance, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "instance:") {
			t.Errorf("instance %q: the error does not name the setting: %v", tt.instance, err)
		}
	}
}
