"""The ML path: feedback -> dataset -> diagnosis -> augmentation -> training -> evaluation -> registry.

Each step is a library function that writes its artifact into a given directory, so the CLI (`autoopt repair`),
the agents' tools and the autonomous loop can run them one at a time. Heavy libraries are imported inside functions.
"""
