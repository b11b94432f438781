"""HTTP machinery every Mixpanel API shares: sessions, error kinds, rate limiting.

Code here runs on worker threads (sessions, requests) and on the main thread (classifying
errors); nothing here writes Singer messages.
"""
