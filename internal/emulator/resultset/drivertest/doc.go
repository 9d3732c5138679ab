// Package drivertest holds the tests that decode the result encoder's output
// with the real gosnowflake driver, served through the emulator. It is kept
// apart from package resultset so that the encoder's own tests build even
// while the emulator server does not.
package drivertest
