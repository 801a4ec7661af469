"""Admin → Settings → Email → Templates."""
