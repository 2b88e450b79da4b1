//! Webhooks: deliveries to a receiver on loopback (signatures checked by a verifier written
//! from the specification, outcomes, Retry-After, redirects, body cap, the SSRF guard), the
//! endpoint routes (secrets shown once, rotation, test messages, tenancy, audit) and the
//! automatic disabling of a failing endpoint.

mod delivery;
mod disable;
mod endpoints;
