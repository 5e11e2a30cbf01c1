"""meterwerk's pure rating and accounting core. See README.md beside this file."""
