"""The domain core: the raw contract, settings, warehouse paths, the Spark session factory and the
configuration language. Every layer may import it; it imports none of them."""
