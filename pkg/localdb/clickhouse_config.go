package localdb

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// clickhouseConfig is a complete server config: every path points into Dir
// so nothing under /etc or /var is read or written, and only the two ports we
// chose are opened (no interserver port; 18.16 has no MySQL port). Logs go to
// the console, which is our log file, at warning level so that a long-running
// dev server does not fill the disk. Caches are small because several test
// binaries may run a server each. The time zone is UTC, as elsewhere in
// Tollgate, whatever the machine's.
var clickhouseConfig = template.Must(template.New("config.xml").Funcs(template.FuncMap{"x": xmlEscape}).Parse(
	`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <console>1</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{{.TCPPort}}</tcp_port>
  <http_port>{{.HTTPPort}}</http_port>
  <path>{{x .Dir}}/data/</path>
  <tmp_path>{{x .Dir}}/tmp/</tmp_path>
  <user_files_path>{{x .Dir}}/user_files/</user_files_path>
  <format_schema_path>{{x .Dir}}/format_schemas/</format_schema_path>
  <users_config>{{x .Dir}}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`))

// clickhouseUsers allows the passwordless default user from loopback only.
// An idle native connection notices a shutdown only every poll_interval
// seconds (10 by default), which made every Stop with a client still
// connected take 10 s; 1 s keeps Stop quick.
const clickhouseUsers = `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <poll_interval>1</poll_interval>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks>
        <ip>127.0.0.1</ip>
        <ip>::1</ip>
      </networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default></default>
  </quotas>
</yandex>
`

// writeConfig (re)writes config.xml and users.xml into Dir for the current
// ports and returns the path of config.xml.
func (c *ClickHouse) writeConfig() (string, error) {
	var b bytes.Buffer
	err := clickhouseConfig.Execute(&b, struct {
		Dir               string
		TCPPort, HTTPPort int
	}{c.dir, c.tcpPort, c.httpPort})
	if err != nil {
		return "", fmt.Errorf("render clickhouse config: %w", err)
	}
	configPath := filepath.Join(c.dir, "config.xml")
	if err := os.WriteFile(configPath, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "users.xml"), []byte(clickhouseUsers), 0o644); err != nil {
		return "", fmt.Errorf("write clickhouse users: %w", err)
	}
	return configPath, nil
}

func xmlEscape(s string) (string, error) {
	var b bytes.Buffer
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}
