"""The obfuscation proxy: turns the labelled business problem into abstract mathematics."""
