"""What people read: pages, messages, the terminal."""
