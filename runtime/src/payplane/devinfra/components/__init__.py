"""One module per infrastructure component; each knows how to build, start, probe and stop itself."""
