"""factoryhub's JupyterHub side: the site file, the hub configuration and its pages."""
