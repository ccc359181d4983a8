package edge

import (
	"testing"

	"github.com/tollgate/tollgate/services/edge/internal/usagepub"
)

func BenchmarkDbgNoPub(b *testing.B) {
	rig := newBenchRig(b)
	p, err := usagepub.New(rig.srv.nc, usagepub.Config{SpoolDir: b.TempDir(), QueueSize: 1 << 21}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	rig.srv.usage = p
	for _, name := range []string{"plain", "stream"} {
		b.Run(name, func(b *testing.B) {
			c := newBenchClient(rig, benchChat, nil)
			if name == "stream" {
				c = newBenchClient(rig, benchStreamChat, map[string][]string{"X-Mock-Chunks": {"16"}})
			}
			cpu := startThreadCPU()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				c.do(rig.h)
				n++
			}
			cpu.report(b, n)
		})
	}
}
