"""The fresh-machine test: `make up` from nothing in a clean Debian 12 container."""
