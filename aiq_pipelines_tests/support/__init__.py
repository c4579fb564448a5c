"""What the tests share: helpers, shared test bodies and fixture plugins, one kind per module.

Test modules import from here and never from one another (``test_architecture.py`` checks it): importing a test module
collects its tests and fixtures again where it is imported.
"""
