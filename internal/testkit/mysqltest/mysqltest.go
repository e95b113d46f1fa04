// Package mysqltest gives Spike's tests empty MySQL databases on the
// server named by SPIKE_TEST_MYSQL_DSN.
package mysqltest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// Server returns an admin connection (no database selected) to the server
// named by SPIKE_TEST_MYSQL_DSN, closed at cleanup, and the parsed DSN to
// derive databases' DSNs from. The test is skipped when the variable is
// unset, and fails instead under SPIKE_TEST_REQUIRE (CI).
func Server(t testing.TB) (*sql.DB, *mysql.Config) {
	t.Helper()
	dsn := os.Getenv("SPIKE_TEST_MYSQL_DSN")
	if dsn == "" {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("SPIKE_TEST_MYSQL_DSN unset")
		}
		t.Skip("set SPIKE_TEST_MYSQL_DSN (e.g. root@tcp(127.0.0.1:3306)/test) to run MySQL tests")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("SPIKE_TEST_MYSQL_DSN: %v", err)
	}
	admin := cfg.Clone()
	admin.DBName = ""
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("MySQL at SPIKE_TEST_MYSQL_DSN: %v", err)
	}
	return db, cfg
}

// Databases creates n empty databases spike_test_<random>_<i>, dropped at
// cleanup, and returns their configurations.
func Databases(t testing.TB, n int) []*mysql.Config {
	t.Helper()
	admin, cfg := Server(t)
	var b [4]byte
	rand.Read(b[:])
	prefix := "spike_test_" + hex.EncodeToString(b[:])
	out := make([]*mysql.Config, n)
	for i := range n {
		name := fmt.Sprintf("%s_%d", prefix, i)
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			t.Fatalf("create database %s: %v", name, err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
				t.Errorf("drop database %s: %v", name, err)
			}
		})
		c := cfg.Clone()
		c.DBName = name
		out[i] = c
	}
	return out
}
