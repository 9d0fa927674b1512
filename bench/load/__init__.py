"""Load generator: open/closed loop against a Curacache server, HDR histograms, reports."""
