package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/testkit/tlstest"
)

// Real servers with TLS and authentication, started by the tests with a
// throwaway CA: the clients take their credentials and TLS from the
// configuration, and without them (or with another CA) they are refused.

// needBinary returns the path of a server binary, skipping the test when
// it is missing (failing under SPIKE_TEST_REQUIRE).
func needBinary(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
		t.Fatalf("%s not found", name)
	}
	t.Skipf("%s not found: install it to run this test", name)
	return ""
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess starts a server process killed at cleanup, its output in
// dir/name.log (shown if the test fails).
func startProcess(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

// waitUntil retries f for up to a minute (servers start slowly on a
// loaded machine).
func waitUntil(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestExternalNATSOverTLS: a NATS server requiring a user, a password and
// mutual TLS takes an instance configured with them, and refuses one
// without credentials, without a client certificate, trusting another CA
// or without TLS.
func TestExternalNATSOverTLS(t *testing.T) {
	ca := tlstest.New(t)
	srv, err := natsbus.StartEmbeddedServer(natsbus.EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		User: "spike", Password: "nats-pw", TLS: ca.ServerConfig(t, true)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	good := NATSConfig{URLs: []string{url}, User: "spike", Password: "nats-pw",
		TLS: TLSFiles{CAFile: ca.CAFile, CertFile: ca.ClientCert, KeyFile: ca.ClientKey}}
	connect := func(n NATSConfig) error {
		a := &app{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		err := a.connectNATS(Config{NATS: n})
		if a.nc != nil {
			a.nc.Close()
		}
		return err
	}
	if err := connect(good); err != nil {
		t.Fatalf("with credentials and mutual TLS: %v", err)
	}
	refused := map[string]func(n *NATSConfig){
		"wrong password":        func(n *NATSConfig) { n.Password = "wrong" },
		"no credentials":        func(n *NATSConfig) { n.User, n.Password = "", "" },
		"no client certificate": func(n *NATSConfig) { n.TLS.CertFile, n.TLS.KeyFile = "", "" },
		"another CA":            func(n *NATSConfig) { n.TLS.CAFile = ca.OtherCAFile },
		"no TLS": func(n *NATSConfig) {
			n.TLS = TLSFiles{}
			n.URLs = []string{strings.Replace(url, "tls://", "nats://", 1)}
		},
	}
	for name, change := range refused {
		t.Run(name, func(t *testing.T) {
			n := good
			change(&n)
			if err := connect(n); err == nil {
				t.Error("connected")
			}
		})
	}
}

// startRedisTLS starts redis-server on a TLS port only, requiring a
// password (user default, and an ACL user spike) and, with mutual, client
// certificates.
func startRedisTLS(t *testing.T, ca *tlstest.CA, mutual bool) string {
	t.Helper()
	bin := needBinary(t, "redis-server")
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	auth := "no"
	if mutual {
		auth = "yes"
	}
	// An ACL rule has spaces, which the command line does not take.
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte("user spike on >spike-pw ~* &* +@all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, dir, "redis", bin, conf, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", ca.ServerCert, "--tls-key-file", ca.ServerKey, "--tls-ca-cert-file", ca.CAFile,
		"--tls-auth-clients", auth, "--requirepass", "redis-pw",
		"--save", "", "--appendonly", "no", "--dir", dir)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitUntil(t, "redis-server over TLS", func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	return addr
}

func pingRedis(r RedisConfig) error {
	client, err := redisClient(r)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Do(ctx, client.B().Ping().Build()).Error()
}

// TestRedisOverTLS: redis-server with TLS only and a password: the client
// configured with the CA (and, when the server asks, a client
// certificate) and the password, or an ACL user, connects; without TLS,
// with another CA, a wrong password or no client certificate it is
// refused.
func TestRedisOverTLS(t *testing.T) {
	ca := tlstest.New(t)
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprint("client certificates required=", mutual), func(t *testing.T) {
			addr := startRedisTLS(t, ca, mutual)
			good := RedisConfig{Addrs: []string{addr}, Password: "redis-pw", TLS: TLSFiles{CAFile: ca.CAFile}}
			if mutual {
				good.TLS.CertFile, good.TLS.KeyFile = ca.ClientCert, ca.ClientKey
			}
			if err := pingRedis(good); err != nil {
				t.Fatalf("with TLS and the password: %v", err)
			}
			acl := good
			acl.Username, acl.Password = "spike", "spike-pw"
			if err := pingRedis(acl); err != nil {
				t.Errorf("as ACL user spike: %v", err)
			}
			refused := map[string]func(r *RedisConfig){
				"no TLS":         func(r *RedisConfig) { r.TLS = TLSFiles{} },
				"another CA":     func(r *RedisConfig) { r.TLS.CAFile = ca.OtherCAFile },
				"wrong password": func(r *RedisConfig) { r.Password = "wrong" },
			}
			if mutual {
				refused["no client certificate"] = func(r *RedisConfig) { r.TLS.CertFile, r.TLS.KeyFile = "", "" }
			}
			for name, change := range refused {
				t.Run(name, func(t *testing.T) {
					r := good
					change(&r)
					if err := pingRedis(r); err == nil {
						t.Error("connected")
					}
				})
			}
		})
	}
}

// startMariaDBTLS starts a throwaway mariadbd on a loopback port that
// requires secure transport, with users spike (password) and spike_x509
// (password and a client certificate), and a database spike. It returns
// the port.
func startMariaDBTLS(t *testing.T, ca *tlstest.CA) int {
	t.Helper()
	mariadbd := needBinary(t, "mariadbd")
	install := needBinary(t, "mariadb-install-db")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	args := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, install, args...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := freeLoopbackPort(t)
	sock := filepath.Join(dir, "m.sock")
	serverArgs := []string{mariadbd, "--no-defaults", "--datadir=" + data, "--socket=" + sock,
		"--pid-file=" + filepath.Join(dir, "m.pid"), "--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
		"--ssl-cert=" + ca.ServerCert, "--ssl-key=" + ca.ServerKey, "--ssl-ca=" + ca.CAFile, "--require-secure-transport=ON"}
	if os.Geteuid() == 0 {
		serverArgs = append(serverArgs, "--user=root") // mariadbd refuses to run as root otherwise
	}
	startProcess(t, dir, "mariadb", serverArgs...)
	// The socket counts as secure transport: set up through it.
	admin, err := sql.Open("mysql", "root@unix("+sock+")/?timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	waitUntil(t, "mariadbd", admin.Ping)
	for _, q := range []string{
		"CREATE DATABASE spike",
		"CREATE USER 'spike'@'%' IDENTIFIED BY 'mysql-pw'",
		"GRANT ALL ON spike.* TO 'spike'@'%'",
		"CREATE USER 'spike_x509'@'%' IDENTIFIED BY 'mysql-pw' REQUIRE X509",
		"GRANT ALL ON spike.* TO 'spike_x509'@'%'",
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return port
}

func pingMySQL(t *testing.T, m MySQLConfig) error {
	t.Helper()
	st, err := openStores(context.Background(), Config{MySQL: m}, false)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return st.Ping(ctx)
}

// TestMySQLOverTLS: MariaDB requiring secure transport: the stores
// configured with mysql.user, mysql.password and mysql.tls connect (and
// migrate); with a client certificate a REQUIRE X509 user does too.
// Without TLS, with another CA, with a wrong password, or without the
// certificate the X509 user needs, they are refused.
func TestMySQLOverTLS(t *testing.T) {
	ca := tlstest.New(t)
	port := startMariaDBTLS(t, ca)
	dsn := fmt.Sprintf("nobody@tcp(127.0.0.1:%d)/spike?timeout=5s", port)
	good := MySQLConfig{Primary: dsn, User: "spike", Password: "mysql-pw", TLS: TLSFiles{CAFile: ca.CAFile}}
	if err := pingMySQL(t, good); err != nil {
		t.Fatalf("with TLS and the password: %v", err)
	}
	st, err := openStores(context.Background(), Config{MySQL: good}, true)
	if err != nil {
		t.Fatalf("migrate over TLS: %v", err)
	}
	st.Close()
	x509User := good
	x509User.User = "spike_x509"
	x509User.TLS.CertFile, x509User.TLS.KeyFile = ca.ClientCert, ca.ClientKey
	if err := pingMySQL(t, x509User); err != nil {
		t.Errorf("REQUIRE X509 user with a client certificate: %v", err)
	}
	refused := map[string]MySQLConfig{}
	noTLS := good
	noTLS.TLS = TLSFiles{}
	refused["no TLS"] = noTLS
	otherCA := good
	otherCA.TLS.CAFile = ca.OtherCAFile
	refused["another CA"] = otherCA
	wrong := good
	wrong.Password = "wrong"
	refused["wrong password"] = wrong
	noCert := x509User
	noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
	refused["X509 user without a certificate"] = noCert
	for name, m := range refused {
		t.Run(name, func(t *testing.T) {
			if err := pingMySQL(t, m); err == nil {
				t.Error("connected")
			}
		})
	}
	// The DSN's own credentials stay when mysql.user is not set.
	own := good
	own.User, own.Password = "", ""
	own.Primary = fmt.Sprintf("spike:mysql-pw@tcp(127.0.0.1:%d)/spike?timeout=5s", port)
	if err := pingMySQL(t, own); err != nil {
		t.Errorf("credentials in the DSN: %v", err)
	}
}
