"""Is this map right? Sanity checks, faithfulness (deletion, insertion, ROAD, the mask slider), pointing games,
the digits benchmark, ROAR, and the similarity and agreement measures they use."""
