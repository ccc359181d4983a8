package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// rawJSON is a protobuf message as JSON inside a larger JSON document.
func rawJSON(m proto.Message) json.RawMessage {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func writeJSONTo(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (cl *client) printSecret(out io.Writer, k *adminv1.Key, secret string) error {
	if cl.json {
		return writeJSONTo(out, map[string]any{"id": k.GetId(), "api_key": secret, "key": rawJSON(k)})
	}
	if err := cl.printKey(out, k); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nSecret (shown once, store it now):\n  %s\n", secret)
	return nil
}

func (cl *client) printKey(out io.Writer, k *adminv1.Key) error {
	if cl.json {
		return writeJSONTo(out, rawJSON(k))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s\t%s\n", name, value) }
	row("id", k.GetId())
	row("account", k.GetAccount())
	row("name", k.GetName())
	if k.GetDescription() != "" {
		row("description", k.GetDescription())
	}
	if k.GetPurpose() != "" {
		row("purpose", k.GetPurpose())
	}
	row("status", k.GetStatus())
	row("secret", k.GetHint())
	row("permissions", permissionList(k.GetPermissions()))
	row("models", filterText(k.GetModels()))
	row("services", filterText(k.GetServices()))
	if k.GetMaxRequestBytes() > 0 {
		row("max request", fmt.Sprintf("%d bytes", k.GetMaxRequestBytes()))
	}
	if k.GetExpiresAt() != nil {
		row("expires", k.GetExpiresAt().AsTime().Format(time.RFC3339))
	}
	if len(k.GetNotifyEmails()) > 0 {
		row("notify", strings.Join(k.GetNotifyEmails(), ", "))
	}
	if len(k.GetAlertThresholds()) > 0 {
		var ts []string
		for _, t := range k.GetAlertThresholds() {
			ts = append(ts, fmt.Sprintf("%g", t))
		}
		row("alerts at", strings.Join(ts, ", "))
	}
	if k.GetMaskingKey() != "" {
		row("masking", k.GetMaskingKey())
	}
	for _, l := range k.GetLimits() {
		row("limit", limitText(l))
	}
	row("revision", fmt.Sprint(k.GetRevision()))
	return tw.Flush()
}

func (cl *client) printList(out io.Writer, res *adminv1.ListKeysResponse) error {
	if cl.json {
		keys := make([]json.RawMessage, 0, len(res.GetKeys()))
		for _, k := range res.GetKeys() {
			keys = append(keys, rawJSON(k))
		}
		return writeJSONTo(out, map[string]any{"keys": keys, "next_page_token": res.GetNextPageToken()})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tSECRET\tPERMISSIONS\tLIMITS\tEXPIRES")
	for _, k := range res.GetKeys() {
		var limits []string
		for _, l := range k.GetLimits() {
			limits = append(limits, limitText(l))
		}
		expires := "-"
		if k.GetExpiresAt() != nil {
			expires = k.GetExpiresAt().AsTime().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.GetId(), k.GetName(), k.GetStatus(), k.GetHint(),
			permissionList(k.GetPermissions()), orDash(strings.Join(limits, "; ")), expires)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if res.GetNextPageToken() != "" {
		fmt.Fprintf(out, "\nmore: --page-token %s\n", res.GetNextPageToken())
	}
	return nil
}

func permissionList(ps []eventsv1.Permission) string {
	var out []string
	for _, p := range ps {
		out = append(out, strings.ToLower(strings.TrimPrefix(p.String(), "PERMISSION_")))
	}
	return orDash(strings.Join(out, ","))
}

func filterText(f *eventsv1.Filter) string {
	switch f.GetMode() {
	case eventsv1.FilterMode_FILTER_MODE_SELECTED:
		return strings.Join(f.GetNames(), ", ")
	case eventsv1.FilterMode_FILTER_MODE_NONE:
		return "none"
	}
	return "all"
}

// limitText writes a limit as the --limit flag takes it, e.g. spend:day:10.5:calendar.
func limitText(l *adminv1.Limit) string {
	s := strings.ToLower(strings.TrimPrefix(l.GetMetric().String(), "METRIC_")) + ":" +
		strings.ToLower(strings.TrimPrefix(l.GetInterval().String(), "INTERVAL_")) + ":" + l.GetAmount()
	if l.GetWindow() == eventsv1.Window_WINDOW_CALENDAR {
		s += ":calendar"
	}
	if l.GetAvailableImmediately() {
		s += " (available immediately)"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
