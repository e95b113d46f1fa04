package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

const tokenTestSecret = "token-test-secret-0123456789abcdef0123"

func tokenEnv(k string) string {
	if k == "SPIKE_JWT_SECRET" {
		return tokenTestSecret
	}
	return ""
}

// tokenSubject verifies tok with the test secret and returns its sub claim.
func tokenSubject(t *testing.T, tok string) string {
	t.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return []byte(tokenTestSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	sub, _ := claims["sub"].(string)
	return sub
}

// TestTokenUsersRange: --users FIRST-LAST writes one valid token per user,
// in order, one a line, to --out or stdout.
func TestTokenUsersRange(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tokens")
	// 5000 users: more than one signing chunk, so chunks must join in order.
	if err := token([]string{"--users", "3-5002", "--out", out}, tokenEnv, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 5000 {
		t.Fatalf("%d lines, want 5000", len(lines))
	}
	for _, i := range []int{0, 1, 4095, 4096, 4999} {
		if sub := tokenSubject(t, lines[i]); sub != strconv.Itoa(3+i) {
			t.Errorf("line %d: sub %q, want %d", i, sub, 3+i)
		}
	}

	var stdout bytes.Buffer
	if err := token([]string{"--users", "7-8"}, tokenEnv, &stdout); err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(stdout.String())
	if len(got) != 2 || tokenSubject(t, got[0]) != "7" || tokenSubject(t, got[1]) != "8" {
		t.Errorf("stdout %q, want tokens of users 7 and 8", stdout.String())
	}
}

func TestTokenUsersErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--user", "1", "--users", "2-3"},
		{"--users", "5"},
		{"--users", "0-3"},
		{"--users", "9-3"},
		{"--users", "a-b"},
		{"--users", "1-20000000"},
		{"--users", "1-2", "--out", filepath.Join(t.TempDir(), "no-such-dir", "f")},
	} {
		if err := token(args, tokenEnv, &bytes.Buffer{}); err == nil {
			t.Errorf("token(%q) = nil, want an error", args)
		}
	}
}
