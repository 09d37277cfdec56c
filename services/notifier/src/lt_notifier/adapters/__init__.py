"""The notifier's I/O: subscription and delivery SQL, and the HTTP/SMTP senders of the channels."""
