package paymenttest

import "testing"

func TestMemory(t *testing.T) { Run(t, NewMemory()) }
