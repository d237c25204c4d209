// Package dev is what `custos dev` runs: a whole Custos cluster on
// loopback in one process, for a first look and for local development.
//
// It starts a dev chain (package devchain), a coordinator, an agent node,
// a policy node and two guardian nodes, each in its own directory under
// one dev directory (default ./.custos-dev). The first run lays the
// directory out: node and coordinator configurations, identities and
// store keys, two dev guardian accounts derived from a public string and
// written as go-ethereum keystore files under a printed password, an agent
// credential, and a sample policy signed by both guardians. Then it pushes
// the policy, creates a hot key (agent, policy and guardian-1, threshold
// 1: guardian floor 0) and, in the background, a vault key (all four
// members, threshold 2: guardian floor 1), and funds both from a dev
// account. A later run on the same directory reuses all of it: no key
// generation, ready in seconds.
//
// Everything in a dev directory is for development only: the guardian
// keys are public knowledge, the keystore password is printed, and the
// dev chain serves its accounts' private keys.
//
// Pre-parameters are generated for real (tens of seconds of CPU per set
// here); Options.PreParams lets tests hand in fixtures, which the command
// never does.
package dev
