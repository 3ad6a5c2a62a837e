"""The torch-free bottom layer every package may use: errors with their exit codes and the small
command-line helpers (logging set-up). It imports nothing of mn-seg and nothing heavy (no numpy, no
torch), so a command can print its help or refuse a bad argument before any of those load."""
