"""Use cases that touch the database: tickets, replies, attachments, mail in and out."""
