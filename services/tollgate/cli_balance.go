package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
)

// keysBalance prints, per limit, what is used and available now.
func keysBalance(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys balance", "ID")
	if err := cl.parse(fs, args, 1); err != nil {
		return err
	}
	res, err := cl.keys.GetBalances(ctx, connect.NewRequest(&adminv1.GetBalancesRequest{Account: cl.account, Id: fs.Arg(0)}))
	if err != nil {
		return err
	}
	b := res.Msg
	lower := func(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }
	if cl.json {
		rows := make([]map[string]string, 0, len(b.GetLimits()))
		for _, l := range b.GetLimits() {
			row := map[string]string{
				"metric": lower(l.GetMetric().String(), "METRIC_"), "interval": lower(l.GetInterval().String(), "INTERVAL_"),
				"window": lower(l.GetWindow().String(), "WINDOW_"), "amount": l.GetAmount(), "used": l.GetUsed(), "available": l.GetAvailable(),
			}
			if l.GetResetsAt() != nil {
				row["resets_at"] = l.GetResetsAt().AsTime().Format(time.RFC3339)
			}
			rows = append(rows, row)
		}
		return writeJSONTo(out, map[string]any{"key_id": b.GetKeyId(), "limits": rows,
			"requests": fmt.Sprint(b.GetRequests()), "input_tokens": fmt.Sprint(b.GetInputTokens()),
			"output_tokens": fmt.Sprint(b.GetOutputTokens()), "cost": b.GetCost()})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tINTERVAL\tWINDOW\tAMOUNT\tUSED\tAVAILABLE\tRESETS")
	for _, l := range b.GetLimits() {
		resets := "-"
		if l.GetResetsAt() != nil {
			resets = l.GetResetsAt().AsTime().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", lower(l.GetMetric().String(), "METRIC_"), lower(l.GetInterval().String(), "INTERVAL_"),
			lower(l.GetWindow().String(), "WINDOW_"), l.GetAmount(), l.GetUsed(), l.GetAvailable(), resets)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\ntotals: %d requests, %d input and %d output tokens, $%s\n", b.GetRequests(), b.GetInputTokens(), b.GetOutputTokens(), b.GetCost())
	return nil
}
