'use strict';

module.exports = require('./dsu-worker');
