"""Plans variants and planners shipped with the plugin (see README.md here)."""
