// Package compose holds the container end-to-end test of the compose
// cluster (docker-compose.yml at the repository root): it builds the
// static binary and the image, brings the cluster up under a project name
// of its own, pays through it, stops, kills and partitions its members,
// and removes every container and volume at the end. It has no code
// besides the test; the test skips where docker is absent.
package compose
