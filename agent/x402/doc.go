// Package x402 is the Custos client for x402 HTTP payments: it reads a
// server's payment requirements from a 402 response (v2 PAYMENT-REQUIRED
// header, or the v1 JSON body), lets the caller's Chooser pick one, builds
// the EIP-3009 TransferWithAuthorization typed data of the `exact` EVM
// scheme, has a Signer sign it (the sidecar sends it through the cluster,
// whose policy decides) and retries the request once with the payment
// header (PAYMENT-SIGNATURE, or X-PAYMENT in v1).
//
// It follows the x402 specification (x402-foundation/x402):
// specs/x402-specification-v2.md, specs/transports-v2/http.md,
// specs/schemes/exact/scheme_exact_evm.md, and for v1
// specs/x402-specification-v1.md and specs/transports-v1/http.md.
//
// Every message from the server is parsed strictly: size limits before
// decoding, required fields checked, addresses, amounts and networks
// validated, and an error that names the field. A 402 response is paid at
// most once; budgets across calls are the policy's business.
package x402
