package main

import (
	"bytes"
	"flag"
	"fmt"
)

// helpError is what a command returns for --help: run prints its text on
// stdout and exits 0.
type helpError struct{ text string }

func (h *helpError) Error() string { return h.text }

// synopses are the usage lines of the commands, by flag set name.
var synopses = map[string]string{
	"serve":   "serve [--addr HOST:PORT] [--data DIR] [--config FILE]",
	"token":   "token --user ID | --users FIRST-LAST [--admin] [--ttl 24h] [--out FILE]",
	"audit":   "audit [--addr HOST:PORT] [--data DIR] [--config FILE] [--wait 30s]",
	"migrate": "migrate --config FILE   (MySQL; SQLite migrates itself)",
	"bench":   "bench [--target URL] [--scenario NAME] [flags]",
}

// helpFor is the --help text of a command's flag set: a usage line, then
// its flags.
func helpFor(fs *flag.FlagSet) error {
	syn, ok := synopses[fs.Name()]
	if !ok {
		syn = fs.Name() + " [flags]"
	}
	return helpWith(fs, syn)
}

// helpWith is helpFor with the usage line given.
func helpWith(fs *flag.FlagSet, syn string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "usage: spike %s\n\nflags:\n", syn)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return &helpError{text: b.String()}
}
