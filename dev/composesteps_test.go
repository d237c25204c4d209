package dev_test

import (
	"bytes"
	"context"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/dev"
)

// checkComposeSteps runs the steps compose setup prints, as printed,
// against a running dev cluster (the same daemons, policy and keys as the
// compose cluster): the host's ./custos with the coordinator's URL and the
// agent credential put in place of the compose cluster's, and guardian-1's
// commands, printed as a docker-compose exec, in guardian-1's environment
// as docker-compose.yml sets it (admin socket, keystore, password file).
func checkComposeSteps(t *testing.T, ctx context.Context, c *dev.Cluster) {
	t.Helper()
	vault, _ := c.Vault()
	steps, err := dev.ComposeSteps(ctx, c.ChainURL(), &dev.ComposeKeys{Hot: c.Hot(), Vault: vault}, dev.ComposeStepsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compose setup's steps:%s", dev.FormatSteps(steps, 1))
	host := strings.NewReplacer(dev.ComposeHostURL, c.URL(), dev.ComposeHostCredential, c.CredentialFile())
	guardian1 := map[string]string{
		"CUSTOS_ADMIN":                  "unix://" + c.AdminSocket(dev.NameGuardian1),
		"CUSTOS_GUARDIAN_KEYSTORE":      c.Keystore(dev.NameGuardian1),
		"CUSTOS_GUARDIAN_PASSWORD_FILE": c.PasswordFile(),
	}
	run := func(s dev.Step, stdin string, replace ...string) (int, string) {
		t.Helper()
		args := slices.Clone(s.Args)
		for i := range args {
			args[i] = strings.NewReplacer(replace...).Replace(host.Replace(args[i]))
		}
		env := &cli.Env{Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
		switch line := dev.ShellQuote(args); {
		case strings.HasPrefix(line, dev.ComposeHostProgram+" "):
			args = args[1:]
		case strings.HasPrefix(line, dev.ComposeGuardian1Exec+" "):
			args = args[len(strings.Fields(dev.ComposeGuardian1Exec)):]
			env.Getenv = func(k string) string { return guardian1[k] }
		default:
			t.Fatalf("step %q runs neither %s nor %s: %s", s.Say, dev.ComposeHostProgram, dev.ComposeGuardian1Exec, line)
		}
		var out bytes.Buffer
		env.Stdout, env.Stderr = &out, &out
		code := cli.Run(ctx, env, args)
		t.Logf("$ %s\n%s", dev.ShellQuote(s.Args), out.String())
		return code, out.String()
	}

	before := balance(t, c.ChainURL(), dev.Vendors[0])
	if code, o := run(steps[0], ""); code != 0 || !strings.Contains(o, "(broadcast)") {
		t.Fatalf("compose hot payment step: exit %d", code)
	}
	waitBalance(t, c.ChainURL(), dev.Vendors[0], new(big.Int).Add(before, dev.HotPayment))
	if code, o := run(steps[1], ""); code != 0 || strings.Contains(o, ": signed") {
		t.Fatalf("compose guarded request step: exit %d (signed before any approval?)", code)
	}
	var id string
	for id == "" {
		code, o := run(steps[2], "")
		if code != 0 {
			t.Fatalf("compose guardian pending step: exit %d", code)
		}
		if id = requestID.FindString(o); id == "" {
			select {
			case <-ctx.Done():
				t.Fatal("the guarded request never reached guardian-1's queue")
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	if code, _ := run(steps[3], "y\n", dev.RequestIDPlaceholder, id); code != 0 {
		t.Fatalf("compose approve step: exit %d", code)
	}
	before = balance(t, c.ChainURL(), dev.Vendors[1])
	if code, o := run(steps[4], ""); code != 0 || !strings.Contains(o, id) || !strings.Contains(o, "(broadcast)") {
		t.Fatalf("compose collect step: exit %d", code)
	}
	waitBalance(t, c.ChainURL(), dev.Vendors[1], new(big.Int).Add(before, dev.GuardedPayment))
}
