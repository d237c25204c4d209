package cli

import (
	"context"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
)

func init() {
	register(&Command{
		Name:    "requests",
		Summary: "signing requests on the coordinator: show, wait",
		Run:     runRequests,
	})
}

func runRequests(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("requests", args, "show", "wait")
	if err != nil {
		return err
	}
	name := "requests " + sub
	fs := NewFlags(env, name, name+" REQUEST_ID [--credential FILE | --token TOKEN]")
	rf := addRESTFlags(fs)
	credFile := fs.String("credential", "", "read as this agent (credential file) instead of with an operator token")
	timeout := fs.Duration("timeout", 10*time.Minute, "wait: how long to wait for a final state")
	pos, err := parseAll(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("%s needs one request id", name)
	}
	id, err := ids.ParseRequestID(pos[0])
	if err != nil {
		return Usagef("%v", err)
	}
	var cred *agentauth.Credential
	if *credFile != "" {
		if cred, err = LoadCredential(*credFile); err != nil {
			return err
		}
	}
	cl, err := rf.client(env, client.Options{Agent: cred})
	if err != nil {
		return err
	}
	if sub == "show" {
		r, err := cl.Request(ctx, id)
		if err != nil {
			return err
		}
		return printRequest(env, r, *rf.json)
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := cl.WaitFinal(wctx, id)
	if r == nil {
		return err
	}
	if perr := printRequest(env, r, *rf.json); perr != nil {
		return perr
	}
	return err
}
