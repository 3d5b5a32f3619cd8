"""The image input layer: sources, sniffing, validation, policies, rendering, safe fetching, token estimates."""
